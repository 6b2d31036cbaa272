"""The model\x27s language (tokens, grammar, sampling, corpus) and the network."""
