/** The dashboard's two HTML documents. Every URL in them is relative, so `ui/` may be mounted anywhere. */

export function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}

/** The dashboard's icon (a shield with a dollar sign), served at `ui/favicon.svg` without a session. */
export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><path d="M16 2 4 6v9c0 7.5 5.1 13.2 12 15 6.9-1.8 12-7.5 12-15V6z" fill="#2f5bd3"/><text x="16" y="22" font-family="Arial,sans-serif" font-size="16" font-weight="700" fill="#fff" text-anchor="middle">$</text></svg>`;

const ICON_LINK = '<link rel="icon" href="favicon.svg" type="image/svg+xml">';

/** The login page; its few styles are inline so that it needs nothing a session guards. */
export function loginPage(error: string | null): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in · spendguard</title>${ICON_LINK}
<style>
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f6f7f9;color:#1d2330;display:grid;place-items:center;min-height:100vh}
main{background:#fff;border:1px solid #dfe3ea;border-radius:10px;padding:32px 36px;width:320px;box-shadow:0 2px 8px rgba(20,30,50,.06)}
h1{font-size:20px;margin:0 0 4px}p{margin:0 0 20px;color:#5b6475}
label{display:block;font-weight:600;margin:12px 0 4px}
input{width:100%;box-sizing:border-box;padding:8px 10px;border:1px solid #c5ccd8;border-radius:6px;font:inherit}
button{margin-top:20px;width:100%;padding:9px;border:0;border-radius:6px;background:#2f5bd3;color:#fff;font:inherit;font-weight:600;cursor:pointer}
input:focus-visible,button:focus-visible{outline:3px solid #9db7ff;outline-offset:1px}
.error{color:#a3261b;background:#fdecea;border-radius:6px;padding:8px 10px;margin:0 0 8px}
</style></head>
<body><main>
<h1>spendguard</h1><p>Sign in to the dashboard</p>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="login">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form></main></body></html>`;
}

/**
 * The single-page app's shell: the bundle draws each section (hash routes) into `main`. The bundle's
 * URLs carry its version, so a browser keeps it across pages and loads until the bundle changes.
 */
export function appPage(username: string, csrfToken: string, assetVersion: string): string {
  const v = encodeURIComponent(assetVersion);
  const sections = [
    ['spend', 'Spend'],
    ['budgets', 'Budgets'],
    ['keys', 'Keys'],
    ['teams', 'Teams'],
    ['users', 'Users'],
    ['customers', 'Customers'],
    ['tags', 'Tags'],
    ['models', 'Models'],
    ['logs', 'Logs'],
  ];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="csrf-token" content="${escapeHtml(csrfToken)}">
<title>spendguard</title>${ICON_LINK}<link rel="stylesheet" href="assets/app.css?v=${v}"></head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<span class="brand">spendguard</span>
<nav aria-label="Sections"><ul>${sections
    .map(([id, label]) => `<li><a href="#/${id}" data-section="${id}">${label}</a></li>`)
    .join('')}</ul></nav>
<form method="post" action="logout" class="logout"><span class="who">${escapeHtml(username)}</span>
<input type="hidden" name="csrf_token" value="${escapeHtml(csrfToken)}"><button type="submit" class="link">Log out</button></form>
</header>
<main id="main" tabindex="-1"><p>Loading…</p></main>
<script src="assets/app.js?v=${v}"></script>
</body></html>`;
}
