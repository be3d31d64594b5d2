"""Where multi-trial searches run: one search loop (persistence, cache, resume) and the engines that evaluate its
architectures (in-process, NNI's local training service, or trials of an ``nnictl`` experiment)."""
