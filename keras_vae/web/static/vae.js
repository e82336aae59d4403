// The arithmetic of the page, without the DOM or onnxruntime: the seeded prior draws, the
// anomaly score and turning decoder means into pixels. keras_vae/web/__init__.py documents
// each formula and has the same PRNG in Python (prior_normals).

// mulberry32: a 32-bit seeded uniform generator on [0, 1).
export function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// n * k standard normals (Box-Muller on mulberry32(seed), u1 = 1 - u in (0, 1]), row by row.
export function priorNormals(seed, n, k) {
  const uniform = mulberry32(seed);
  const out = new Float32Array(n * k);
  for (let i = 0; i < n * k; i += 2) {
    const u1 = 1 - uniform();
    const u2 = uniform();
    const radius = Math.sqrt(-2 * Math.log(u1));
    out[i] = radius * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n * k) out[i + 1] = radius * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
export function probit(p) {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269,
    -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
    -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
    4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - low) return -probit(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

const LOG_2PI = Math.log(2 * Math.PI);

// ln p(x|z) in nats of one example: Bernoulli from the logits (never clipped probabilities,
// -BCE = -(max(l, 0) - l x + ln(1 + exp(-|l|)))), Gaussian from the mean and log-variance.
export function logLikelihood(likelihood, x, out) {
  let sum = 0;
  if (likelihood === 'bernoulli') {
    const logits = out.x_logits;
    for (let i = 0; i < x.length; i++) {
      const l = logits[i];
      sum -= Math.max(l, 0) - l * x[i] + Math.log1p(Math.exp(-Math.abs(l)));
    }
    return sum;
  }
  const mean = out.x_mean;
  const logVar = out.x_log_var;
  for (let i = 0; i < x.length; i++) {
    const diff = x[i] - mean[i];
    sum += -0.5 * (LOG_2PI + logVar[i] + diff * diff * Math.exp(-logVar[i]));
  }
  return sum;
}

// KL(q(z|x) || N(0, I)) in nats (THEORY eq [27]): diagonal (z_log_var) or full (z_scale_tril).
export function kl(posterior, zMean, zScale, k) {
  let sum = 0;
  if (posterior === 'diagonal') {
    for (let i = 0; i < k; i++) {
      sum += -0.5 * (1 + zScale[i] - zMean[i] * zMean[i] - Math.exp(zScale[i]));
    }
    return sum;
  }
  let logDet = 0;
  let trace = 0;
  let norm = 0;
  for (let i = 0; i < k; i++) {
    logDet += 2 * Math.log(zScale[i * k + i]);
    norm += zMean[i] * zMean[i];
    for (let j = 0; j < k; j++) trace += zScale[i * k + j] * zScale[i * k + j];
  }
  return 0.5 * (-logDet - k + trace + norm);
}

// The image layout of one example: [H, W, C] like the Python runtime's image_shape
// (square flat inputs become square images; other flat inputs a one-row strip).
export function imageShape(inputShape) {
  if (inputShape.length === 3 && (inputShape[2] === 1 || inputShape[2] === 3)) return inputShape;
  if (inputShape.length === 2) return [inputShape[0], inputShape[1], 1];
  const size = inputShape.reduce((a, b) => a * b, 1);
  for (const channels of [1, 3]) {
    const side = Math.floor(Math.sqrt(size / channels) + 1e-9);
    if (side * side * channels === size) return [side, side, channels];
  }
  return [1, size, 1];
}

// Whether the inputs are pictures (a drawing canvas makes sense).
export function isImage(inputShape) {
  const [h, w] = imageShape(inputShape);
  return h > 1 && w > 1;
}

// Values in [0, 1] for display: probabilities as they are, Gaussian means stretched from
// their min..max over the whole batch (like the runtime's to_pixels).
export function displayValues(likelihood, values) {
  if (likelihood === 'bernoulli') return values;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi > lo ? hi - lo : 1;
  return values.map((v) => (v - lo) / span);
}

// Draws n examples (values in [0, 1], n * size) as a grid of `columns` tiles on `canvas`,
// each pixel repeated `zoom` times, 1 px white padding.
export function drawGrid(canvas, values, n, shape, columns, zoom) {
  const [h, w, c] = shape;
  const rows = Math.ceil(n / columns);
  const pad = 1;
  canvas.width = columns * (w * zoom + pad) + pad;
  canvas.height = rows * (h * zoom + pad) + pad;
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(canvas.width, canvas.height);
  image.data.fill(255); // white padding
  const size = h * w * c;
  for (let e = 0; e < n; e++) {
    const top = pad + Math.floor(e / columns) * (h * zoom + pad);
    const left = pad + (e % columns) * (w * zoom + pad);
    for (let y = 0; y < h * zoom; y++) {
      for (let x = 0; x < w * zoom; x++) {
        const src = e * size + (Math.floor(y / zoom) * w + Math.floor(x / zoom)) * c;
        const dst = ((top + y) * canvas.width + left + x) * 4;
        for (let ch = 0; ch < 3; ch++) {
          const v = values[src + (c === 3 ? ch : 0)];
          // 1 (ink) is white, as in the runtime's PNGs
          image.data[dst + ch] = Math.round(255 * Math.min(1, Math.max(0, v)));
        }
        image.data[dst + 3] = 255;
      }
    }
  }
  ctx.putImageData(image, 0, 0);
}

// Mean and standard deviation of a canvas's gray level (0..255): evidence that it is not blank.
export function canvasStats(canvas) {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  let sumSq = 0;
  const count = data.length / 4;
  for (let i = 0; i < data.length; i += 4) {
    const gray = (data[i] + data[i + 1] + data[i + 2]) / 3;
    sum += gray;
    sumSq += gray * gray;
  }
  const mean = sum / count;
  return { mean, std: Math.sqrt(Math.max(0, sumSq / count - mean * mean)) };
}

// Float32 values from the `?x=` query (URL-safe base64 of little-endian float32 bytes).
export function decodeInput(text) {
  let b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  while (b64.length % 4) b64 += '=';
  const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  return new Float32Array(new DataView(bytes.buffer).byteLength / 4).map(
    (_, i) => new DataView(bytes.buffer).getFloat32(4 * i, true));
}
