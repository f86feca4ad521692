"""The toy world: a tiny tokenizer, synthetic harmful/benign data, an unsafe base and its aligned twin."""
