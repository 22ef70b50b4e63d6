"""What a trial runs on a worker: data, models, the training loop and the Ray trainable.

Dependency direction: `orchestrator -> trainables -> trainables.mixing`; nothing here imports
the orchestrator.
"""
