"""postedge: edge software for rural post outlets."""
