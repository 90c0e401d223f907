"""The For You engine's models: simulator, datasets, metrics, baselines, collaborative and content
retrieval, features, the ranker, the offline pipeline/evaluation and the model registry.

Pure computation on numpy/scipy/implicit/faiss/LightGBM: nothing here touches the database or the
web layer, so the same code runs offline (evaluation, training) and online (serving).
"""
