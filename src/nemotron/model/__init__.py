"""The Nemotron model: `config` (ModelConfig, no torch needed), `presets`, and `nemotron` (the PyTorch
model). Import from the submodules; this package imports nothing so configs load without torch."""
