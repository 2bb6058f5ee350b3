// Test-only keys for the JWE fuzz target and its seed corpus (fuzz_corpus/jwe holds JWEs
// encrypted to them, so the fuzzer reaches key unwrapping and GCM). NOT SECRET: never use them
// for anything but tests.
#pragma once

namespace lazycrypt::keywrap::testdata {

inline constexpr char kFuzzRsa2048Pem[] = R"PEM(
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDnwYI0P9agwQuQ
dOzRX26BCuH5140IpdcXREBtHSJCPTuJtsDF0s+ITFGzGoWGk/09zl3Rg9RPIBGZ
rCnHxGV0bAIMwq2Sf7IKeC0SL9wOhocL2O7pVWYmVxGL76Hg/xXtfFGLCIxTFXEo
zaleAVZiAMPQ6+D3Y+J9/ynG1UCbtivQ3V877bpLsadwmwXd/E5LUq9zidvagBZK
1PaficSIOj7l7zZWE3gXAjEiyP7YiZCLmXmfmnNuTJSUWVnVo800VTWDkg+no0a0
5c3V3yYmumvwhJzbtsOMaUI7DQ2gWVFDWf90nr0I316Xy6k2TA5W+eq1Z9CowC6F
bO6c0J8PAgMBAAECggEAEIPxCB5fTtzJVHwla86kSWx7aeDX/pYSGJwQoUksHOwc
w/WyxOyYeH4qOYK6CDsGMKZ2EU1KAgqz5mKz8xxf6ua1hxZEGBM8hO16fMTNwEU+
Kdrfb6zAlxpDHr9IptS9MDIMF5Kk379AukEptCn3oqVEtXmei9KugpixiY2+r6BH
9ai9W8AqYBVcW8AU7DM042FrhB1yu6IyDG035aaE3zcqd1rE5z/19YXc4zsbK8iA
fcdNyTor3l5ZwEW5dodoLIQE+NvDx/VRYvpbh4rn7JvKndtzenf5dXkW3MTBncOd
9mOuN9IYFfLoVQg+gsArGP8x9PtcOhuOMMUCxEp4DQKBgQD6GN2N3N1CCm9RB4gb
qbO72VI+xWeXkmpEE7Fvo2skm7abkZ8rLaAIg2hmkwPA5BlCwZ1jw9bX7zwLtqa6
euqB2u1TugMCLkl6NjAh7Y58Poah3w+GFyBGn9dUfdtPam+75wQ+NER85p5R30+I
w5b9Nxp8/ycjSla5ZaKvOVt9gwKBgQDtOdJomXkrX/xzyO/L9Wd6IsRXfbUNP7VB
Z8LSgopOdlOghCiE6S44nAkWAjIuIABQVsU8B5As20zCGh2XScsTdCUH6uDk2YoM
rWz0SNSZNEt9Xn7ScMupeB6aQkhmDo3HWeNNR8StjVWjmGRtmB/ybMGE0q2xFkQf
nLvqyEPOhQKBgQC9swqqRjMVmrCgt6PHx8rq24aE0lsnHwm3pXBbC4uDcxDpo2Ul
7S+MBZC07SJVty5p8k4dlDhsBax3/g0tOXqTEKofbeJGTzGwn1WXBoejOhIIyhcO
UJBMwYUlM2mcLVGfJzWSsTaZvpur4kSDqkfmvVs8IJVhMUviyHLDkjARXQKBgHNm
gnXB2xD/o6aLpCN64PioOw04qL+mMz17BWo0eKWMqEfYooFtkb+WIFFlhhWsGZr7
av01zKwVjnSKEcUL788p2+3LE9YgASkDoJIBb/KLXwHA2z7yAhERzwlJn0COaegF
US7B7+pha7ymoIwzya67uzQq7LXN2BvsufmPrHSlAoGAdatH3MWFGsfqh6oej092
8b2qO3brMV1T0g5+eJ3aj8cJO8U5VYLJEgl9zTYUF+ViqzieVuoY95R3Uu0U/2i1
v8uy9DhgLatETxesrbuAsZZGjMENHNNqBFjfBYXL6JDE2VtavxtU4LrBXhHecQhP
yMVPnFXKx38aEeSEv/643qw=
-----END PRIVATE KEY-----
)PEM";

inline constexpr char kFuzzP256Pem[] = R"PEM(
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIJM/Yyp0ea1o2Jp2aA9ZXVbxmXPasvsNhj6n28Yv1eyDoAoGCCqGSM49
AwEHoUQDQgAENtZrpcTPYzL4y8dm1uveLnZaYuwno39aIFujObYlVBBzE4r8q6qn
jON+0m6RnWWHQJot80G3U6iu/En3+875+A==
-----END EC PRIVATE KEY-----
)PEM";

}  // namespace lazycrypt::keywrap::testdata
