"""Architecture evaluators: training-based and zero-cost (training-free) scoring of candidate networks."""
