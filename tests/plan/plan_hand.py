"""Config values and written-out formulas for the planner's hand-checked tests (from the bundled config.json files)."""

GIB = 1 << 30
H100_MEMORY_BYTES = 80 * GIB  # lcprof/data/gpus.json: 85899345920
H100_HBM_BYTES_PER_S = 3.35e12
H100_BF16_FLOPS_PER_S = 989.4e12
NVLINK4_BYTES_PER_S = 450e9
BF16 = 2  # bytes per element
FP8 = 1


def llama_params(h, inter, vocab, layers, heads, kv_heads, head_dim, tied=False):
    """Parameter count of a Llama-style model, written out from its config."""
    q = h * heads * head_dim
    kv = h * kv_heads * 2 * head_dim
    o = heads * head_dim * h
    mlp = 3 * h * inter
    norms = 2 * h
    per_layer = q + kv + o + mlp + norms
    emb = vocab * h
    head = 0 if tied else vocab * h
    return layers * per_layer + emb + head + h  # + final norm


def tiled_activation_bytes(n, h, heads, kv_heads, head_dim, inter, s=BF16):
    """Peak activation bytes of one Llama layer's prefill of n tokens, tiled attention (lcprof's convention):
    attention step x, normed x, q, k, v, out (+ fp32 LSE), MLP step x, normed x, gate, up, product."""
    attn = s * (2 * n * h + n * heads * head_dim + n * kv_heads * 2 * head_dim + n * heads * head_dim) + 4 * heads * n
    mlp = s * n * (2 * h + 3 * inter)
    return max(attn, mlp)
