"""Training and evaluation of the models a bundle serves."""
