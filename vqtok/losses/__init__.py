"""Training objectives: the decoder likelihoods a tokenizer type trains with (`likelihoods`)."""
