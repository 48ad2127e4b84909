// A demo backend: greets each connection with its name, then echoes.
// Usage: node scripts/demo-backend.js NAME PORT
import net from 'node:net';

const [name = 'backend', port = '7101'] = process.argv.slice(2);
const server = net.createServer((socket) => {
  socket.on('error', () => socket.destroy());
  socket.write(`hello from ${name}\n`);
  socket.pipe(socket);
});
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
