"""facial-r1: explainable facial emotion analysis in the way of Facial-R1 (SFT, GRPO, data synthesis)."""
