"""The labs: measurements of one mechanism each (attention, MLA, MoE, ...) on the running model, as plain
functions returning dataclasses or tables that the tabs, the lessons and `python -m ds_core bench` all call."""
