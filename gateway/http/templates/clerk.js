(function(){
var box=document.getElementById('feed-list'),lang={{ lang|tojson }};
function tick(){
fetch('/clerk/feed?lang='+lang,{cache:'no-store',credentials:'same-origin'}).then(function(r){
if(!r.ok){throw new Error(r.status);}return r.text();}).then(function(h){box.innerHTML=h;})
.catch(function(){}).then(function(){setTimeout(tick,5000);});
}
setTimeout(tick,5000);
})();
/* The gateway's own block (templates/gateway.html) the same way; when it cannot be
   read the block says that what it shows is not current. */
(function(){
var lang={{ lang|tojson }};
function tick(){
fetch('/clerk/gateway?lang='+lang,{cache:'no-store',credentials:'same-origin'}).then(function(r){
if(!r.ok){throw new Error(r.status);}return r.text();}).then(function(h){
/* a lapsed session answers with the login page: not the block */
if(h.indexOf('<section id="gateway"')!==0){throw new Error('not the gateway block');}
var g=document.getElementById('gateway');if(g){g.outerHTML=h;}})
.catch(function(){var g=document.getElementById('gateway');
if(g&&!g.querySelector('.gw-stale')){var p=document.createElement('p');p.className='msg bad-msg gw-stale';
p.setAttribute('role','alert');p.textContent=g.getAttribute('data-stale');g.insertBefore(p,g.children[1]);}})
.then(function(){setTimeout(tick,5000);});
}
setTimeout(tick,5000);
})();
