// Stands in for `next dev` (see stand_in_next.rs): `next dev --hostname H --port P`, serving
// only under NEXT_BASE_PATH like Next's basePath. Every request is logged to stdout (the
// sandbox's dev-server.log) as `METHOD URL host=HOST`.
//
//   {base}/unsafe-headers  a response with the headers the preview listener must drop
//   {base}/_next/hmr       a WebSocket that sends {"action":"built"}, like Next's HMR socket
//   {base}/…               a page that shows its base path and the HMR socket's message
'use strict';
const http = require('node:http');
const crypto = require('node:crypto');

const args = process.argv.slice(2);
const option = (name) => args[args.indexOf(name) + 1];
const base = process.env.NEXT_BASE_PATH || '';
const underBase = (url) => url === base || url.startsWith(`${base}/`) || url.startsWith(`${base}?`);

const page = `<!doctype html>
<html>
  <head><meta charset="utf-8"><link rel="icon" href="data:,"><title>stand-in preview</title></head>
  <body>
    <h1 id="base-path">${base}</h1>
    <p id="hmr">no HMR message yet</p>
    <script>
      const socket = new WebSocket(location.origin.replace(/^http/, 'ws') + ${JSON.stringify(base)} + '/_next/hmr');
      socket.onmessage = (event) => { document.getElementById('hmr').textContent = event.data; };
    </script>
  </body>
</html>
`;

const server = http.createServer((req, res) => {
  console.log(`${req.method} ${req.url} host=${req.headers.host}`);
  if (!underBase(req.url)) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end(`outside the base path ${base}\n`);
    return;
  }
  if (req.url === `${base}/unsafe-headers`) {
    res.writeHead(200, {
      'content-type': 'text/plain',
      'set-cookie': 'stolen=1; Domain=localhost; Path=/',
      'service-worker-allowed': '/',
      'clear-site-data': '"cookies", "storage"',
      'x-stand-in': 'kept',
    });
    res.end('unsafe headers\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(page);
});

server.on('upgrade', (req, socket) => {
  console.log(`UPGRADE ${req.url} host=${req.headers.host} origin=${req.headers.origin}`);
  socket.on('error', () => {});
  const key = req.headers['sec-websocket-key'];
  if (req.url !== `${base}/_next/hmr` || !key) {
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
  );
  // One unmasked text frame (a payload under 126 bytes has its length in the second byte).
  const message = Buffer.from('{"action":"built"}');
  socket.write(Buffer.concat([Buffer.from([0x81, message.length]), message]));
});

server.listen(Number(option('--port')), option('--hostname'));
