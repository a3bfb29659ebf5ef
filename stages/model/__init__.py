"""The torch side: checkpoints read safely, the seed's model class, backbones and the normalised model directory."""
