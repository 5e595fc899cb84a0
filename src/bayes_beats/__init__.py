"""Bayes Beats."""
