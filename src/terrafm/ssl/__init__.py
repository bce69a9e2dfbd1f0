"""Self-supervised pretraining of TerraFM: DINO self-distillation with dual centering (docs/design.md, "Objective").

Submodules: ``heads`` (projection head, multi-crop wrapper), ``loss`` (dual-centred DINO loss),
``schedules``, ``step`` (one training step, EMA, parameter groups), ``train`` (the loop, to read
first), ``build`` (what a config trains), ``checkpointing`` (exact-resume training state),
``run_folder`` (the run's folder checks and final outputs), ``distributed`` (torchrun / DDP /
FSDP2, SIGTERM), ``metrics``, ``export`` and ``batch`` (the contract-B batch). Import from the submodules; this
package imports nothing heavy on its own.
"""
