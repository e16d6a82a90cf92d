// The official `openai` npm client (package.json pins it) against ternd's
// HTTP face: a random-weight language model with the llama-3 chat template,
// written by python/ternd/gguf_writer.py and converted by `ternctl convert`,
// served by the real daemon on TCP loopback with a bearer token. For greedy
// sampling with a seed, the streamed pieces must join to the non-streamed
// text, for a chat completion and a plain completion.
//
// Environment: TERND_PATH, TERNCTL_PATH, PYTHON, GGUF_WRITER_PATH.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import OpenAI from 'openai';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

let dir;
let daemon;
let log = '';
let client;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ternd-openai-'));
  execFileSync(env('PYTHON'), [env('GGUF_WRITER_PATH'), '--arch', 'bitnet-b1.58',
    '--hidden', '128', '--ffn', '256', '--layers', '2', '--heads', '4',
    '--kv-heads', '2', '--vocab', '600', '--seed', '11', '--chat-template',
    'llama3', '-o', join(dir, 'lm.gguf')]);
  execFileSync(env('TERNCTL_PATH'), ['convert', join(dir, 'lm.gguf'), '-o',
    join(dir, 'lm.tern')], { stdio: 'ignore' });
  writeFileSync(join(dir, 'token'), 'node-test-token\n');
  const port = await freePort();
  writeFileSync(join(dir, 'ternd.toml'), [
    '[server]', `socket = "${join(dir, 't.sock')}"`,
    '[runtime]', `model = "${join(dir, 'lm.tern')}"`, 'arena_mb = 32',
    '[llm]', 'threads = 1', 'sequences = 2', 'max_context = 512',
    '[http]', `port = ${port}`, `token_file = "${join(dir, 'token')}"`, ''
  ].join('\n'));
  daemon = spawn(env('TERND_PATH'), ['--config', join(dir, 'ternd.toml')],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  daemon.stderr.on('data', (d) => { log += d; });
  const baseURL = `http://127.0.0.1:${port}/v1`;
  // Ready when /health answers (with a deadline that fails the test).
  const deadline = Date.now() + 20000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline || daemon.exitCode !== null) {
      throw new Error(`ternd did not come up:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  client = new OpenAI({ baseURL, apiKey: 'node-test-token', maxRetries: 0 });
});

after(() => {
  if (daemon && daemon.exitCode === null) daemon.kill('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('models lists the served model', async () => {
  const list = await client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].id, 'random-bitnet-b1.58');
});

test('a wrong key is refused with 401', async () => {
  const bad = new OpenAI({ baseURL: client.baseURL, apiKey: 'nope', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e.status === 401);
});

test('streamed chat pieces join to the plain chat answer', async () => {
  const params = {
    model: 'ternd',
    messages: [
      { role: 'system', content: 'You are a robot.' },
      { role: 'user', content: 'Where is the gripper?' },
    ],
    max_tokens: 16, temperature: 0, seed: 5,
  };
  const plain = await client.chat.completions.create(params);
  const text = plain.choices[0].message.content;
  assert.equal(plain.choices[0].message.role, 'assistant');
  assert.ok(plain.usage.completion_tokens > 0);
  const stream = await client.chat.completions.create({ ...params, stream: true });
  let joined = '';
  let chunks = 0;
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    chunks++;
    joined += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(joined, text);
  assert.equal(chunks, plain.usage.completion_tokens + 1, 'one chunk per token, then the finish');
  assert.equal(finish, plain.choices[0].finish_reason);
  assert.deepEqual(usage, plain.usage);
});

test('streamed completion pieces join to the plain completion', async () => {
  const params = { model: 'ternd', prompt: 'The conveyor belt', max_tokens: 16,
    temperature: 0, seed: 5 };
  const plain = await client.completions.create(params);
  const text = plain.choices[0].text;
  assert.ok(text.length > 0);
  const stream = await client.completions.create({ ...params, stream: true });
  let joined = '';
  for await (const chunk of stream) joined += chunk.choices[0]?.text ?? '';
  assert.equal(joined, text);
});

test('a bad field is an OpenAI error with status 400', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'ternd', messages: [{ role: 'user', content: 'hi' }], temperature: 7 }),
    (e) => e.status === 400 && /'temperature' is 7/.test(e.message));
});

test('chat logprobs come back in the SDK\'s shape', async () => {
  const r = await client.chat.completions.create({
    model: 'ternd',
    messages: [{ role: 'user', content: 'Status?' }],
    max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3,
  });
  const content = r.choices[0].logprobs?.content;
  assert.ok(Array.isArray(content) && content.length === r.usage.completion_tokens);
  for (const t of content) {
    assert.equal(typeof t.token, 'string');
    assert.ok(t.logprob <= 0);
    assert.ok(Array.isArray(t.bytes));
    assert.equal(t.top_logprobs.length, 3);
    // Greedy: the chosen token is the likeliest.
    assert.equal(t.top_logprobs[0].logprob, t.logprob);
  }
});
