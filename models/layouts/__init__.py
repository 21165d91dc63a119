"""Released weights of related projects, mapped onto our VPRModel's state_dict keys.

One module per project, each with ``is_layout(state_dict) -> bool`` (the state_dict is in that
project's saved layout) and ``to_ours(state_dict) -> dict`` (renamed to our keys, unused keys dropped by
name). State_dicts are taken at the VPRModel level (``backbone.…``, ``aggregator.…``), after any
``model.`` / ``module.`` wrapper prefix has been stripped.
"""
