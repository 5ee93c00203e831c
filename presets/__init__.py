"""Built-in presets (TOML data files); installed as stablekit.presets."""
