"""The tiny pretraining config shared by the pretraining tests (also by spawned ranks)."""

# A very small run: terrafm_tiny, 32 px global / 16 px local crops, a 64-prototype head.
TINY = [
    "model.name=terrafm_tiny",
    "head.out_dim=64",
    "head.hidden_dim=48",
    "head.bottleneck_dim=16",
    "optim.epochs=2",
    "optim.warmup_epochs=1",
    "optim.freeze_last_layer_epochs=0",
    "loss.warmup_teacher_temp_epochs=1",
    "data.batch_size=4",
    "data.multicrop.global_size=32",
    "data.multicrop.local_size=16",
    "data.multicrop.n_local=2",
    "data.num_workers=0",
    "train.amp=false",
    "train.device=cpu",
    "train.log_every=1",
    "train.progress=false",
]
