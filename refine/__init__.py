"""refine: REFINE (reinforced fast weights with next-sequence prediction) as an experiment pipeline."""

__version__ = "0.1.0"
