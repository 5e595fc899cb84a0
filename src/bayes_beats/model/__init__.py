"""The model: codec, pipeline, sketch, variational head and planner, training loop, generator, CLAP."""
