"""PyTorch checkpoint → ONNX model folder (model.onnx, tokenizer.json, card.json)."""
