"""Training: watermark, dataset, model, fine-tuning and evaluation."""
