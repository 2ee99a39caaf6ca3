"""Training: data for self-distillation, and the elastic optimization of encoders."""
