// The page of an exported keras-vae model: runs encoder.onnx and decoder.onnx with
// onnxruntime-web (wasm backend, one thread, files in ./ort/) and wires up the controls.
// What each number means: keras_vae/web/__init__.py.
import * as ort from './ort/ort.wasm.min.mjs';
import * as V from './vae.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);

ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
ort.env.wasm.numThreads = 1; // no SharedArrayBuffer, so no cross-origin-isolation headers
ort.env.wasm.proxy = false;
ort.env.logLevel = 'error';

let facts;
let card;
let K;
let inputShape;
let size;
let shape;
let zoom;
let encoder;
let decoder;

// onnxruntime-web runs one call per session at a time: every run goes through this queue.
let queue = Promise.resolve();
function serial(task) {
  const next = queue.then(task, task);
  queue = next.catch(() => {});
  return next;
}

function outputs(session, result) {
  const named = {};
  for (const name of session.outputNames) named[name] = result[name].data;
  return named;
}

// Decoder outputs for n latent points (z: Float32Array n * K): {x_mean, x_logits | x_log_var}.
function decode(z, n) {
  return serial(async () => {
    const feeds = { [decoder.inputNames[0]]: new ort.Tensor('float32', z, [n, K]) };
    return outputs(decoder, await decoder.run(feeds));
  });
}

// Encoder outputs for one example x (Float32Array of `size`): {z_mean, z_log_var | z_scale_tril}.
function encode(x) {
  return serial(async () => {
    const feeds = { [encoder.inputNames[0]]: new ort.Tensor('float32', x, [1, ...inputShape]) };
    return outputs(encoder, await encoder.run(feeds));
  });
}

function show(values, n, canvas, columns, scale = zoom) {
  V.drawGrid(canvas, V.displayValues(card.likelihood, values), n, shape, columns, scale);
}

function fmt(value, digits = 3) {
  return typeof value === 'number' ? value.toFixed(digits) : String(value);
}

// ------------------------------------------------------------------ model card
function renderCard() {
  const rows = Object.entries(card).map(([key, value]) => {
    let text = Array.isArray(value) ? `(${value.join(', ')})` : String(value ?? '-');
    if (typeof value === 'number' && !Number.isInteger(value)) text = value.toPrecision(4);
    return [key.replace(/_/g, ' '), text];
  });
  if (facts.threshold !== null) rows.push(['anomaly threshold', `${fmt(facts.threshold, 2)} nats`]);
  rows.push(['onnxruntime-web', `${ort.env.versions?.web ?? facts.ort_web_version} (wasm, 1 thread)`]);
  const body = document.createElement('tbody');
  for (const [key, text] of rows) {
    const row = body.insertRow();
    const th = document.createElement('th');
    th.textContent = key;
    row.appendChild(th);
    row.insertCell().textContent = text;
  }
  $('card').replaceChildren(body);
  $('title').textContent = card.name;
  document.title = `${card.name} - keras-vae`;
}

// ------------------------------------------------------------------ self-check
async function selfCheck() {
  const { z, x_mean: expected } = facts.check;
  const n = z.length;
  const out = await decode(Float32Array.from(z.flat()), n);
  let maxDiff = 0;
  let scale = 1;
  expected.flat().forEach((value, i) => {
    maxDiff = Math.max(maxDiff, Math.abs(out.x_mean[i] - value));
    scale = Math.max(scale, Math.abs(value));
  });
  const ok = maxDiff <= facts.check.tolerance * scale;
  const element = $('selfcheck');
  element.dataset.maxAbsDiff = String(maxDiff);
  element.dataset.ok = ok ? '1' : '0';
  element.className = ok ? 'ok' : 'mismatch';
  element.textContent = `${ok ? 'ok' : 'mismatch'}: the decoder's x_mean for ${n} stored latent ` +
    `points differs from Keras's by at most ${maxDiff.toExponential(1)}`;
}

// ------------------------------------------------------------------ prior samples
let seed = 0;
let gridZ;
async function sampleGrid() {
  const n = 64;
  gridZ = V.priorNormals(seed, n, K);
  const out = await decode(gridZ, n);
  const canvas = $('samples');
  show(out.x_mean, n, canvas, 8);
  const stats = V.canvasStats(canvas);
  let total = 0;
  for (const v of out.x_mean) total += v;
  Object.assign(canvas.dataset, {
    seed: String(seed), mean: String(stats.mean), std: String(stats.std),
    xMean: String(total / out.x_mean.length),
  });
  $('seed').textContent = String(seed);
}

// ------------------------------------------------------------------ latent space
let sliderZ;
async function renderSlider() {
  const out = await decode(sliderZ, 1);
  show(out.x_mean, 1, $('slider-image'), 1);
}

function setSliders(z) {
  sliderZ = Float32Array.from(z.slice(0, K));
  document.querySelectorAll('#sliders input').forEach((input, i) => {
    input.value = String(sliderZ[i]);
  });
  return renderSlider();
}

function buildSliders() {
  const box = $('sliders');
  const shown = Math.min(K, 64);
  for (let i = 0; i < shown; i++) {
    const label = document.createElement('label');
    label.textContent = `z${i + 1}`;
    const input = document.createElement('input');
    Object.assign(input, { type: 'range', min: '-3', max: '3', step: '0.05' });
    input.addEventListener('input', () => {
      sliderZ[i] = Number(input.value);
      renderSlider();
    });
    label.appendChild(input);
    box.appendChild(label);
  }
  if (K > shown) $('slider-note').textContent = `The first ${shown} of ${K} dimensions.`;
}

async function manifold() {
  const steps = 15;
  const z = new Float32Array(steps * steps * 2);
  for (let r = 0; r < steps; r++) {
    for (let c = 0; c < steps; c++) {
      // Gaussian quantiles, so equal areas of the grid hold equal prior mass.
      z[2 * (r * steps + c)] = V.probit(0.05 + (0.9 * c) / (steps - 1));
      z[2 * (r * steps + c) + 1] = V.probit(0.95 - (0.9 * r) / (steps - 1));
    }
  }
  const out = await decode(z, steps * steps);
  show(out.x_mean, steps * steps, $('manifold'), steps, Math.max(1, Math.round(zoom / 2)));
}

// ------------------------------------------------------------------ interpolation
let interpolationSeed = 1;
async function interpolate() {
  const steps = 8;
  const ends = V.priorNormals(10000 + interpolationSeed, 2, K);
  const z = new Float32Array(steps * K);
  for (let s = 0; s < steps; s++) {
    const t = s / (steps - 1);
    for (let i = 0; i < K; i++) z[s * K + i] = (1 - t) * ends[i] + t * ends[K + i];
  }
  const out = await decode(z, steps);
  show(out.x_mean, steps, $('interpolation'), steps);
}

// ------------------------------------------------------------------ drawing and scoring
let drawing;
function renderDrawing() {
  const canvas = $('draw');
  V.drawGrid(canvas, drawing, 1, shape, 1, Math.max(1, Math.floor(224 / shape[1])));
}

// -ELBO at the posterior mean: KL(q(z|x) || p(z)) - ln p(x | z = mu(x)), in nats.
async function score(x) {
  const posterior = await encode(x);
  const zMean = posterior.z_mean;
  const out = await decode(Float32Array.from(zMean), 1);
  const logLik = V.logLikelihood(card.likelihood, x, out);
  const divergence = V.kl(card.posterior, zMean, posterior.z_log_var ?? posterior.z_scale_tril, K);
  const value = divergence - logLik;
  const element = $('score');
  Object.assign(element.dataset, {
    score: String(value), reconstruction: String(-logLik), kl: String(divergence),
  });
  let text = `-ELBO ${value.toFixed(2)} nats = reconstruction ${(-logLik).toFixed(2)} + ` +
    `KL ${divergence.toFixed(2)}`;
  if (facts.threshold !== null) {
    const flagged = value > facts.threshold;
    element.dataset.flag = flagged ? '1' : '0';
    text += flagged ? ` > threshold ${fmt(facts.threshold, 2)}: unusual` :
      ` <= threshold ${fmt(facts.threshold, 2)}: typical`;
  }
  element.textContent = text;
  show(out.x_mean, 1, $('reconstruction'), 1);
  return zMean;
}

function setupDrawing() {
  drawing = new Float32Array(size);
  const canvas = $('draw');
  renderDrawing();
  let down = false;
  const paint = (event) => {
    const rect = canvas.getBoundingClientRect();
    const px = ((event.clientX - rect.left) / rect.width) * shape[1];
    const py = ((event.clientY - rect.top) / rect.height) * shape[0];
    for (let y = Math.floor(py - 2); y <= py + 2; y++) {
      for (let x = Math.floor(px - 2); x <= px + 2; x++) {
        if (y < 0 || x < 0 || y >= shape[0] || x >= shape[1]) continue;
        if (Math.hypot(x + 0.5 - px, y + 0.5 - py) > 1.3) continue;
        for (let c = 0; c < shape[2]; c++) drawing[(y * shape[1] + x) * shape[2] + c] = 1;
      }
    }
    renderDrawing();
  };
  canvas.addEventListener('pointerdown', (event) => {
    down = true;
    canvas.setPointerCapture(event.pointerId);
    paint(event);
  });
  canvas.addEventListener('pointermove', (event) => { if (down) paint(event); });
  canvas.addEventListener('pointerup', () => {
    down = false;
    score(drawing).then(setSliders);
  });
  $('clear').addEventListener('click', () => {
    drawing.fill(0);
    renderDrawing();
  });
}

// ------------------------------------------------------------------ latency
// Mean wall time of one decode call (ms) over `runs` calls after `warmup` calls; the mean of
// a run of calls, since browsers round performance.now() to 0.1 ms or coarser.
async function timeDecode(n, warmup, runs) {
  const z = V.priorNormals(7, n, K);
  for (let i = 0; i < warmup; i++) await decode(z, n);
  const start = performance.now();
  for (let i = 0; i < runs; i++) await decode(z, n);
  return (performance.now() - start) / runs;
}

async function latency() {
  const one = await timeDecode(1, 10, 200);
  const grid = await timeDecode(64, 3, 30);
  const element = $('latency');
  Object.assign(element.dataset, { batch1Ms: String(one), batch64Ms: String(grid) });
  element.textContent = `decode, mean: ${one.toFixed(2)} ms for 1 image, ${grid.toFixed(2)} ms ` +
    `for a 64-image grid (${(grid / 64).toFixed(3)} ms per image)`;
}

// ------------------------------------------------------------------ start
function report() {
  const data = (id) => ({ ...($(id)?.dataset ?? {}) });
  return {
    error: document.body.dataset.error ?? null, selfcheck: data('selfcheck'),
    samples: data('samples'), score: data('score'), latency: data('latency'),
    ort_web: ort.env.versions?.web ?? null, userAgent: navigator.userAgent,
  };
}

async function main() {
  facts = await (await fetch('web.json')).json();
  card = facts.card;
  K = card.latent_dim;
  inputShape = card.input_shape;
  size = inputShape.reduce((a, b) => a * b, 1);
  shape = V.imageShape(inputShape);
  zoom = Math.max(1, Math.round(56 / shape[0])); // 28x28 images at 2x
  seed = query.has('seed') ? Number(query.get('seed')) : facts.seed;
  renderCard();
  const options = { executionProviders: ['wasm'] };
  encoder = await ort.InferenceSession.create('encoder.onnx', options);
  decoder = await ort.InferenceSession.create('decoder.onnx', options);
  $('status').textContent = '';

  await selfCheck();
  await sampleGrid();
  $('resample').addEventListener('click', () => { seed += 1; sampleGrid(); });
  buildSliders();
  await setSliders(gridZ);
  if (K === 2) {
    $('manifold-box').hidden = false;
    await manifold();
  }
  await interpolate();
  $('new-ends').addEventListener('click', () => { interpolationSeed += 1; interpolate(); });
  if (V.isImage(inputShape)) {
    $('draw-box').hidden = false;
    setupDrawing();
  }
  if (query.has('x')) {
    const x = V.decodeInput(query.get('x'));
    if (x.length !== size) throw new Error(`?x= holds ${x.length} values, the model takes ${size}`);
    if (drawing) { drawing.set(x); renderDrawing(); }
    await score(x);
  }
  if (query.get('latency') !== '0') await latency();
  else $('latency').textContent = 'not measured (?latency=0)';
}

main().catch((err) => {
  console.error(err);
  document.body.dataset.error = String(err?.message ?? err);
  $('status').textContent = `error: ${err?.message ?? err}`;
}).finally(() => {
  document.body.dataset.ready = '1';
  if (query.has('report')) {
    fetch(query.get('report'), { method: 'POST', body: JSON.stringify(report()) });
  }
});
