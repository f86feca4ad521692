"""The paper's plan as data, run on any world (`python -m ssah.plan`); see runner.py."""
