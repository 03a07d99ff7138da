"""Cross-validation Dice per label and the ensemble weight search."""
