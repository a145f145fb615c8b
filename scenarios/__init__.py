"""The verification scenarios of the Triton deployment gate (`pytest scenarios` or `pytest --pyargs scenarios`)."""
