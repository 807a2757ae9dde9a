"""The scheduler: the dispatch loop that places admitted jobs on workers, the placement
rule, and pre-warming of models on workers before jobs ask for them."""
