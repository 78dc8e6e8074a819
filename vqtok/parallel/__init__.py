"""Several processes as one job: collectives that are no-ops on one process (`collectives`) and
the joining of launched processes into one Accelerate job (`launch`)."""
