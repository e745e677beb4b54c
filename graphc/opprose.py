"""The op reference's hand-written prose, by op name: what a declaration cannot say (a line of
meaning where OpDef's ``doc`` has none yet, a ``.graph`` example, the gradient in words, the shape
rule where the kind does not imply it). A table apart from opdoc.py, which renders the reference
from the registry; tests/docs checks that it names only declared ops and covers every one."""
from __future__ import annotations

from typing import NamedTuple

from graphc.ir.ops.registry import OpDef


class Prose(NamedTuple):
    """What the declaration cannot say: one line of meaning, a ``.graph`` expression over
    ``EXAMPLE_INPUTS`` (empty for IR-only ops), the VJP in words, the shape rule where the kind
    does not imply it."""
    line: str = ""
    example: str = ""
    grad: str = ""
    shape: str = ""


# the names the examples use; tests/docs compiles every example against these declarations
EXAMPLE_INPUTS = """\
    input x: f32[N, 4]
    input y: f32[N, 4]
    input v: f32[4]
    input W: f32[4, 3]
    input b: f32[3]
    input labels: i64[N]
    input mask: bool[N, 4]
    input key: i64[]
    input img: f32[N, 8, 8, 1]
    input k: f32[3, 3, 1, 2]
    input seq: f32[N, 10, 2]
    input k1: f32[3, 2, 5]
    input gamma: f32[4]
    input beta: f32[4]
    input mu: f32[4]
    input sigma2: f32[4]
"""

# a reduction's shape, which opdoc.py also gives every REDUCE op with no prose of its own
REDUCED = "x without the reduced axes (kept as 1 with keepdims=true); without axis, all of them"
_LOSS = ("reduction=\"none\": elementwise losses keep the broadcast shape of their inputs, "
         "cross-entropies over classes drop the class axis; \"mean\"/\"sum\": a scalar")

PROSE: dict[str, Prose] = {
    # ---- special and IR-only
    "const": Prose(shape="the attribute `shape`"),
    "dim": Prose(shape="a scalar"),
    "grad": Prose(example="grad(sum(x * x), x)",
                  grad="second order: differentiates the expanded gradient",
                  shape="the shape of x"),
    "fused": Prose(shape="the body's results", grad="by expanding the body"),
    "slice": Prose("`x[start:stop:step]` on each axis (the IR form of indexing; negative steps "
                   "walk backwards)", grad="g scattered into zeros of x's shape",
                   shape="per axis: the number of steps in [start, stop)"),
    "pad": Prose("general padding with lo/hi (may be negative: cropping) and interior padding "
                 "(IR only; `.graph`'s `pad` is `pad_constant`)", grad="the slice of g that "
                 "x was placed at", shape="per axis: lo + d + hi + (d-1) * interior"),
    "scatter_add": Prose("x with updates added at indices along axis (the gradient of take; "
                         "IR only)", grad="x: g; updates: take(g, indices)",
                         shape="the shape of x"),
    "im2col": Prose("conv2d's patches: for an NHWC x, every kernel tap's window of the padded "
                    "input as a block of channels, so a convolution is one matmul (IR only)",
                    grad="col2im(g): each tap's block added back at its window",
                    shape="[N, OH, OW, KH*KW*C]"),
    "col2im": Prose("the transpose of im2col: every tap's block of channels added back at its "
                    "window of an [N, size..., C] tensor, padding dropped (IR only)",
                    grad="im2col(g)", shape="[N, size[0], size[1], C]"),
    "window_max": Prose("the max over windows that tile an NHWC x (max_pool2d when its windows "
                        "tile x; IR only)",
                        grad="window_max_grad(x, out, g): g shared equally among each window's "
                        "ties", shape="[N, H/KH, W/KW, C]"),
    "window_max_grad": Prose("the gradient of window_max: g / (ties in the window) at each of "
                             "the window's maxima, else 0 (IR only)",
                             grad="g: each window sums its cotangents' shares; x, out: none"),
    # ---- unary elementwise
    "accumulate": Prose(grad="g, g"),
    "neg": Prose("-x (the prefix minus)", "-x", "-g"),
    "abs": Prose("|x|", "abs(x)", "g * sign(x); abs'(0) = 0"),
    "sign": Prose("-1, 0 or 1 (NaN stays NaN)", "sign(x)"),
    "exp": Prose("e to the x", "exp(x)", "g * exp(x)"),
    "log": Prose("natural logarithm", "log(x * x + 1.0)", "g / x"),
    "log1p": Prose("log(1 + x), exact for small x", "log1p(x * x)", "g / (1 + x)"),
    "sqrt": Prose("square root", "sqrt(x * x + 1e-6)", "g / (2 sqrt(x))"),
    "rsqrt": Prose("1 / sqrt(x)", "rsqrt(x * x + 1.0)", "-g / (2 x sqrt(x))"),
    "square": Prose("x * x", "square(x)", "2 g x"),
    "reciprocal": Prose("1 / x", "reciprocal(x * x + 1.0)", "-g / x^2"),
    "sin": Prose("sine (radians)", "sin(x)", "g cos(x)"),
    "cos": Prose("cosine (radians)", "cos(x)", "-g sin(x)"),
    "tanh": Prose("hyperbolic tangent", "tanh(x)", "g (1 - tanh(x)^2)"),
    "sigmoid": Prose("1 / (1 + e^-x)", "sigmoid(x)", "g s (1 - s), s = sigmoid(x)"),
    "relu": Prose("max(x, 0); NaN stays NaN", "relu(x)", "g where x > 0, else 0: relu'(0) = 0"),
    "leaky_relu": Prose("x where x >= 0, else alpha * x", "leaky_relu(x, alpha=0.1)",
                        "g where x >= 0 (slope 1 at 0, as jax.nn), else alpha g"),
    "elu": Prose("x where x > 0, else alpha (e^x - 1)", "elu(x)",
                 "g where x > 0, else g (elu(x) + alpha)"),
    "softplus": Prose("log(1 + e^x), computed without overflow", "softplus(x)",
                      "g sigmoid(x)"),
    "gelu": Prose(example="gelu(x)", grad="exact derivative of the tanh form, evaluated as "
                  "x sigmoid(2u) (no cancellation)"),
    "stop_gradient": Prose("x, but no gradient flows through it (truncated BPTT, targets)",
                           "stop_gradient(max(x, axis=-1, keepdims=true))",
                           "none: the gradient is an exact zero"),
    "isfinite": Prose("true where x is neither NaN nor +-Inf", "isfinite(x)"),
    "logical_not": Prose("boolean not", "logical_not(mask)"),
    "cast": Prose("convert to dtype; float -> int truncates toward zero and saturates, NaN -> 0",
                  "cast(labels, f32)", "g cast back to x's dtype (none for integer x)"),
    # ---- binary elementwise
    "add": Prose("x + y", "x + y", "g, g (summed to each input's shape)"),
    "sub": Prose("x - y", "x - v", "g, -g"),
    "mul": Prose("x * y", "x * y", "g y, g x"),
    "div": Prose("x / y (floats only)", "x / (y * y + 1.0)", "g / y, -g x / y^2"),
    "pow": Prose("x ** y, C pow (a negative base with an integral exponent is exact; integer "
                 "negative exponents truncate)", "x ** 2",
                 "g y x^(y-1) (0 where y = 0); g x^y log x (log 1 where x = 0)"),
    "maximum": Prose("elementwise max; NaN propagates", "maximum(x, 0.0)",
                     "to the larger input; ties share g equally"),
    "minimum": Prose("elementwise min; NaN propagates", "minimum(x, y)",
                     "to the smaller input; ties share g equally"),
    "lt": Prose("x < y", "x < y"),
    "le": Prose("x <= y", "x <= y"),
    "gt": Prose("x > y", "x > 0.0"),
    "ge": Prose("x >= y", "x >= y"),
    "eq": Prose("x == y", "labels == 3"),
    "ne": Prose("x != y", "labels != 0"),
    "logical_and": Prose("boolean and", "logical_and(mask, x > 0.0)"),
    "logical_or": Prose("boolean or", "logical_or(mask, x > 0.0)"),
    "where": Prose("x where c, else y (c is bool; all three broadcast)",
                   "where(mask, x, 0.0)", "c: none; x: g where c; y: g where not c"),
    "clip": Prose("min(max(x, lo), hi); lo and hi are tensors that broadcast",
                  "clip(x, -1.0, 1.0)", "g where lo <= x <= hi, through maximum/minimum",
                  "x, lo and hi broadcast"),
    # ---- reductions
    "sum": Prose("sum over axes", "sum(x, axis=1)", "g broadcast back over the reduced axes"),
    "prod": Prose("product over axes; the product of nothing is 1", "prod(x, axis=-1)",
                  "g times the product of the other elements (exact where x holds zeros)"),
    "max": Prose("maximum over axes; -inf for an empty axis; NaN propagates",
                 "max(x, axis=1, keepdims=true)", "to the maxima; ties share g equally"),
    "min": Prose("minimum over axes; +inf for an empty axis", "min(x, axis=0)",
                 "to the minima; ties share g equally"),
    "argmax": Prose("index (i64) of the first maximum; 0 on an empty axis", "argmax(x, axis=1)"),
    "argmin": Prose("index (i64) of the first minimum", "argmin(x, axis=1)"),
    "mean": Prose("arithmetic mean over axes (floats only); NaN over nothing",
                  "mean(x, axis=0)", shape=REDUCED),
    "logsumexp": Prose("log(sum(exp(x))), stable (subtracts stop_gradient(max))",
                       "logsumexp(x, axis=-1)", "g softmax(x)", shape=REDUCED),
    "var": Prose("variance, two-pass (no cancellation); ddof as NumPy",
                 "var(x, axis=0, ddof=1)", shape=REDUCED),
    "std": Prose("standard deviation, sqrt(var)", "std(x, axis=-1, keepdims=true)",
                 shape=REDUCED),
    # ---- linear algebra
    "matmul": Prose("x @ y with NumPy's matmul rules (1-D and batched included)", "x @ W",
                    "g @ y^T, x^T @ g",
                    "[..., m, k] @ [..., k, n] -> [..., m, n]; batch dims broadcast; a 1-D "
                    "operand gains and loses a unit axis"),
    # ---- shape
    "reshape": Prose("the same elements in a new shape; one dim may be -1", "reshape(x, [-1])",
                     "reshape(g, x's shape)",
                     "the given shape (counts must agree; -1 is inferred, may be a polynomial)"),
    "transpose": Prose("permute axes (default: reverse them); `x.T` reverses all, `x.mT` "
                       "swaps the last two", "transpose(W, [1, 0])", "transpose(g, inverse perm)",
                       "x's dims in the order perm"),
    "broadcast_to": Prose("x repeated to a shape (NumPy rules, static-1 rule for symbols)",
                          "broadcast_to(v, [N, 4])", "g summed over the broadcast axes",
                          "the given shape"),
    "concat": Prose("join a list of tensors along an existing axis", "concat([x, y], axis=1)",
                    "the matching slice of g to each input",
                    "the inputs' shape, the axis the sum of theirs (e.g. N+4)"),
    "take": Prose("gather: the slices of x at integer indices along axis (out of range is a "
                  "call-time error)", "take(W, labels, axis=0)",
                  "x: scatter_add of g into zeros; indices: none",
                  "x.shape[:axis] + indices.shape + x.shape[axis+1:]"),
    "expand_dims": Prose("insert unit axes", "expand_dims(v, 0)", "reshape back",
                         "x's shape with 1 at each new axis"),
    "squeeze": Prose("remove unit axes (default: all of them)", "squeeze(sum(x, axis=1, "
                     "keepdims=true), 1)", "reshape back", "x's shape less the squeezed 1s"),
    "stack": Prose("join a list of same-shaped tensors along a new axis", "stack([x, y], 1)",
                   "the matching slice of g to each input", "the inputs' shape with the count "
                   "inserted at axis"),
    "flip": Prose("reverse along axes (default: all), symbolic ones included",
                  "flip(x, axis=1)", "flip(g)", "the shape of x"),
    "pad_constant": Prose("pad with a constant value; widths may be symbolic",
                          "pad(x, [[0, 0], [1, 2]], value=0.0)", "the interior slice of g",
                          "per axis: lo + d + hi"),
    # ---- create
    "one_hot": Prose("labels as one-hot rows; an out-of-range label gives a zero row",
                     "one_hot(labels, 4)", shape="labels' shape + [depth]"),
    "zeros": Prose("a tensor of zeros", "zeros([N, 4], f32)", shape="the given shape"),
    "ones": Prose("a tensor of ones", "ones([4], f32)", shape="the given shape"),
    "full": Prose("a tensor filled with value", "full([N, 4], 0.5, f32)",
                  shape="the given shape"),
    "random_uniform": Prose("uniform in [0, 1), Philox-4x32-10 keyed by an integer scalar; "
                            "the same on both backends and any thread count",
                            "random_uniform(key, [N, 4])", shape="the given shape"),
    "random_normal": Prose("standard normal (Box-Muller), same generator as random_uniform",
                           "random_normal(key, [N, 4], f32)", shape="the given shape"),
    "dropout": Prose("inverted dropout: zero with probability rate, scale kept elements by "
                     "1/(1-rate); rate is a scalar tensor (0 at evaluation)",
                     "dropout(x, 0.5, key)", "g times the same mask and scale",
                     "the shape of x"),
    # ---- nn
    "softmax": Prose("exp(x) / sum(exp(x)) along axis, stable", "softmax(x)",
                     shape="the shape of x"),
    "log_softmax": Prose("x - logsumexp(x) along axis", "log_softmax(x, axis=-1)",
                         shape="the shape of x"),
    "softmax_cross_entropy": Prose("-sum(onehot * log_softmax(logits)) per row",
                                   "softmax_cross_entropy(x, y, reduction=\"mean\")",
                                   "softmax(logits) - onehot (times g)", _LOSS),
    "sparse_softmax_cross_entropy": Prose(
        "cross-entropy with integer labels (a label outside [0, C) is a GraphCallError)",
        "sparse_softmax_cross_entropy(x, labels, reduction=\"mean\")",
        "softmax(logits) - one_hot(labels) (times g); labels: none", _LOSS),
    "sigmoid_cross_entropy": Prose("binary cross-entropy on logits, stable",
                                   "sigmoid_cross_entropy(x, y)", "sigmoid(logits) - y",
                                   _LOSS),
    "binary_cross_entropy": Prose("binary cross-entropy on probabilities (logs clamped at "
                                  "-100, as PyTorch)", "binary_cross_entropy(sigmoid(x), y)",
                                  shape=_LOSS),
    "mse": Prose("squared error, mean by default", "mse(x, y)", "2 (pred - target) / count",
                 _LOSS),
    "layer_norm": Prose("normalise over axis, then scale by gamma and shift by beta",
                        "layer_norm(x, gamma, beta)", shape="the shape of x"),
    "batch_norm": Prose("training batch norm: each channel (last axis) normalised with the "
                        "batch's biased statistics", "batch_norm(x, gamma, beta)",
                        shape="the shape of x"),
    "batch_norm_stats": Prose("inference batch norm with given mean and var (`batch_norm` "
                              "called with five tensors)",
                              "batch_norm(x, gamma, beta, mu, sigma2)", shape="the shape of x"),
    # ---- conv / pool
    "conv2d": Prose("2-D convolution, NHWC input, HWIO kernel (jax.lax.conv_general_dilated)",
                    "conv2d(img, k, padding=\"same\")", "transposed convolutions",
                    "[N, OH, OW, Cout]; OH = (H + pads - dilation (KH-1) - 1) / stride + 1"),
    "conv1d": Prose("1-D convolution, NLC input, LIO kernel", "conv1d(seq, k1, stride=2)",
                    "transposed convolutions", "[N, OL, Cout], as conv2d on one axis"),
    "max_pool2d": Prose("max over windows of an NHWC tensor", "max_pool2d(img, 2)",
                        "to each window's maxima; ties share", "[N, OH, OW, C]"),
    "avg_pool2d": Prose("mean over windows (padding counts in the average)",
                        "avg_pool2d(img, 2)", "g / window size to each window",
                        "[N, OH, OW, C]"),
}


def prose(op: OpDef) -> Prose:
    """The op's prose: its declaration's ``doc`` as the line, else this module's table."""
    p = PROSE.get(op.name, Prose())
    return p._replace(line=op.doc) if op.doc else p
