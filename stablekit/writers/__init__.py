"""One writer per format family; each returns the path it wrote and never overwrites silently."""
