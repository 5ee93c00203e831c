"""One self-contained module per modality: load through the device plan, generate, hand to a writer."""
