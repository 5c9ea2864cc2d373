{# The language switch: the only script in the report, inline and hashed into its
   Content-Security-Policy (html_report.SCRIPT). #}
(function(){
var h=document.documentElement,b=document.getElementById('lang-switch'),m=/^#(zh|en)$/.exec(location.hash);
function set(l){h.setAttribute('data-lang',l);h.lang=l==='zh'?'zh-CN':'en';}
if(m){set(m[1]);}
b.addEventListener('click',function(){set(h.getAttribute('data-lang')==='zh'?'en':'zh');});
})();
