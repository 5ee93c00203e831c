"""Model implementations stablekit carries itself, where the official code cannot be a dependency."""
