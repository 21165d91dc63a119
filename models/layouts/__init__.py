"""Key layouts of the related projects' released weights, mapped onto ours.

One module per project, each with ``is_layout(state_dict) -> bool`` (the keys are that project's) and
``to_ours(state_dict) -> dict`` (the same tensors under our keys; a key it cannot place is an error that
names it). SALAD's release and the official DINOv2 weights need no renaming: their keys are ours.
"""
