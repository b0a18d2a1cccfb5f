"""Experiment configs: python files whose `get_config(arg)` returns an ml_collections ConfigDict."""
