"""Ray Tune sweeps: the config section, the search space, the base checkpoint, trials, publishing."""
