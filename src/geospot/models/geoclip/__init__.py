"""GeoCLIP as a geospot model: our own networks on the weights of the `geoclip` package (MIT).

- `network`: location encoder (Equal Earth + random Fourier features at three
  scales + MLPs), image head, and the CLIP ViT-L/14 + head image encoder;
- `weights`: safe one-time conversion of the package's pickles to safetensors;
- `model`: the gallery classifier (cached gallery embeddings, one matmul per batch)
  and `GeoClipPredictor` for `geospot locate --model geoclip`.
"""
