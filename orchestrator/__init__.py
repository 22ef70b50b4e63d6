"""What the DRIVER runs: sweep spec -> Ray Tune -> MLflow -> report, and the `mixsweep` CLI.

Dependency direction: `orchestrator -> trainables -> trainables.mixing`, never reversed.
"""
