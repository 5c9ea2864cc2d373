(function(){
var lang={{ lang|tojson }}, screen='scan', job='', busy=false;
var msg=document.getElementById('msg');
var token=document.querySelector('meta[name="postedge-token"]').getAttribute('content');
function $(s){return document.querySelector(s);}
function show(r){
  var v=r.verdict||(r.ok?'good':'refused');
  msg.className='fb v-'+v; msg.setAttribute('data-verdict',v); msg.setAttribute('data-ok',r.ok?'1':'0');
  msg.textContent=r[lang]||r.en||r.code||'';
}
function post(url,body,raw){
  var opt={method:'POST',credentials:'same-origin',headers:{'X-Postedge-Token':token}};
  if(raw!==undefined){opt.body=raw;opt.headers['Content-Type']='application/octet-stream';}
  else{opt.body=JSON.stringify(body||{});opt.headers['Content-Type']='application/json';}
  return fetch(url,opt).then(function(r){return r.json();}).then(function(r){show(r);refresh();return r;})
   .catch(function(e){show({ok:false,en:String(e),zh:String(e)});});
}
function load(name,el){
  var q='/part?name='+name+'&lang='+lang+(name==='jobs'?'&job='+encodeURIComponent(job):'');
  return fetch(q,{cache:'no-store'}).then(function(r){if(!r.ok)throw new Error(r.status);return r.text();})
   .then(function(h){if(el.getAttribute('data-html')!==h){el.innerHTML=h;el.setAttribute('data-html',h);}
     document.body.removeAttribute('data-stale');})
   .catch(function(){document.body.setAttribute('data-stale','1');});
}
function refresh(){
  load('status',$('#status'));
  var live=$('#scr-'+screen+' .live'); if(live){load(screen,live);}
  if(screen==='camera'){$('#preview').src='/camera.jpg?t='+Date.now();}
}
function go(s){
  screen=s;
  document.querySelectorAll('main > section').forEach(function(x){x.hidden=(x.id!=='scr-'+s);});
  document.querySelectorAll('nav .btn').forEach(function(b){b.setAttribute('aria-current',
    b.getAttribute('data-screen')===s?'true':'false');});
  refresh();
}
document.addEventListener('click',function(e){
  var b=e.target.closest('[data-action],[data-screen]'); if(!b)return;
  if(b.hasAttribute('data-screen')){go(b.getAttribute('data-screen'));return;}
  var a=b.getAttribute('data-action'), j=b.getAttribute('data-job'), st=b.getAttribute('data-step');
  if(a==='mode'){post('/api/mode',{mode:b.getAttribute('data-mode')});}
  else if(a==='open-job'){job=j;refresh();}
  else if(a==='close-job'){job='';refresh();}
  else if(a==='pick'){post('/api/jobs/'+encodeURIComponent(j)+'/pick');}
  else if(a==='step'){post('/api/jobs/'+encodeURIComponent(j)+'/step',{step:st});}
  else if(a==='submit'){post('/api/jobs/'+encodeURIComponent(j)+'/submit');}
  else if(a==='bag-pickup'){post('/api/dispatch/pickup');}
  else if(a==='bag-remove'){post('/api/dispatch/remove',{item:b.getAttribute('data-item')});}
  else if(a==='set-point'){post('/api/dispatch/point',{point:b.getAttribute('data-point')});}
  else if(a==='photo'){msg.className='fb';msg.textContent='…';
    post('/api/jobs/'+encodeURIComponent(j)+'/photo?step='+encodeURIComponent(st),{});}
});
document.addEventListener('change',function(e){
  var i=e.target; if(i.getAttribute('data-action')!=='photo-file'||!i.files.length)return;
  post('/api/jobs/'+encodeURIComponent(i.getAttribute('data-job'))+'/photo?step='
       +encodeURIComponent(i.getAttribute('data-step')),
       null,i.files[0]);
});
document.addEventListener('submit',function(e){
  e.preventDefault(); var f=e.target;
  if(f.id==='scan-form'){var c=f.querySelector('input').value;f.querySelector('input').value='';
    post('/api/scan',{code:c});}
  else if(f.id==='confirm'){var code=f.querySelector('[name=code]').value,
    name=f.querySelector('[name=name]').value;
    post('/api/deliver',{code:f.getAttribute('data-parcel'),method:code?'code':'name',value:code||name});}
  else if(f.classList.contains('handout')){var tok=f.querySelector('[name=code]'),
    tv=tok?tok.value:'', nm=f.querySelector('[name=name]').value;
    post('/api/dispatch/handout',{group:f.getAttribute('data-group'),share:+f.getAttribute('data-share'),
      method:tv?'token':'name',value:tv||nm});}
});
go('scan');
setInterval(refresh,1000);
})();
