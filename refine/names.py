"""The names a study is made of, defined once: stages, methods, suites, architectures, TTT modes.

The bottom floor of `refine` (it imports nothing from the package): the workflow rules
(`workflow/rules/common.smk`), the command line, the config checks, the trainers and the
evaluation import these tuples instead of spelling the lists again.
"""

STAGES = ("pretrain", "midtrain", "posttrain")

# Methods per stage, in table order. `sft_matched` (the compute-matched NTP-SFT baseline) is
# optional in a study config; the rules run the mid-training methods a config defines.
MID_METHODS = ("sft", "sft_matched", "refine")
POST_METHODS = ("sft", "nested_sft", "nested_refine")
METHODS = {"pretrain": ("ntp",), "midtrain": MID_METHODS, "posttrain": POST_METHODS}

# Decoding benchmarks, in table order (`ntp`, the held-out loss, is evaluated beside them).
SUITES = ("niah", "qa", "longbench")

ARCHITECTURES = ("delta_net", "gated_deltanet", "lact")

# Test-time training before decoding (`refine eval --ttt`), and what is reset between updates.
TTT_MODES = ("none", "sft", "refine")
TTT_RESETS = ("example", "cumulative")
