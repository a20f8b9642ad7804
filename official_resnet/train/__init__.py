"""The parts of training (trainer.Trainer composes them); see trainer.py's docstring for the map."""
