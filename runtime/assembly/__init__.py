"""Pipeline assembly above the engines: tokenizers, the vocabulary check, the step segmenter and
the verifier choice, in-process (`torch`) and inside the BLS (`bls`)."""
