// `npm start`: three demo echo backends and l4lb in front of them, from conf/demo.yaml.
// Ctrl-C stops everything.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const children = [];
const backends = [['alpha', 7101], ['bravo', 7102], ['charlie', 7103]];

for (const [name, port] of backends) {
  children.push(spawn(process.execPath, ['scripts/demo-backend.js', name, String(port)], { cwd: root, stdio: 'inherit' }));
}
const lb = spawn('bin/l4lb', ['run', '--config', 'conf/demo.yaml', '--drain-timeout', '1s'], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'inherit'],
});
children.push(lb);

let shown = false;
lb.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  if (!shown && chunk.toString().includes('"started"')) {
    shown = true;
    process.stdout.write(`
  l4lb is running on 127.0.0.1:7100 in front of three backends (alpha, bravo, charlie).
  Try it in another terminal:

      nc 127.0.0.1 7100        # answers "hello from alpha", then echoes what you type
      nc 127.0.0.1 7100        # round robin: the next one is bravo, then charlie

  Each finished connection is logged above as one JSON line. Ctrl-C stops everything.

`);
  }
});
lb.on('exit', (code) => {
  stop();
  process.exitCode = code ?? 0;
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
