"""Small spec texts shared by the end-to-end tests (CLI and notebooks)."""

# Setting-free part: four num_tasks values, eight checkpoints, a few evaluation sequences.
SMALL_SWEEP = """\
num_tasks = [2, 8, 32, 128]
seed = 1

[training]
max_steps = 1000
num_checkpoints = 8

[evaluation]
num_sequences = 4
num_loss_sequences = 32
"""

SMALL_CATEGORICAL = (
    'setting = "categorical-sequence"\nnum_dims = 4\ncontext_length = 8\n' + SMALL_SWEEP
)
