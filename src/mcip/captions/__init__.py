"""Pseudo-captions for MCIP (SPEC section 4): retrieve from a caption pool, generate with a vision-language
model, or fill templates with class names; all write the same JSONL sidecar (``mcip.data.captions``)."""
