# What happens when the workflow starts to run (not in a dry run, which has no side effects).


onstart:
    prepare_run()
