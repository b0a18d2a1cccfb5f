"""The shapes-world study: table 2's rows, a scaling curve, compositional cells and (at the
standard level) a paired-fraction sweep.

Run it with `python -m experiments.shapes_study` (cli.py). The plan is plan.py (CELLS, BUDGETS
and LEVELS: the laptop level by default, `--level standard` for the 32-px world); design.py
turns it into cells, runs and their data, commands.py into command lines and costs, execute.py
runs them, and tables.py, figures.py and report.py write the report.
"""
