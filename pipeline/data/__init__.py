"""Dataset formats, the embedded data generator, loaders and checks."""
