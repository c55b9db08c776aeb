%% otp_tls13: does Erlang/OTP's TLS 1.3 client (as tsung uses it) get through
%% STARTTLS against an XMPP server? OTP's client runs in middlebox-
%% compatibility mode by default and aborts ("hello_middlebox_assert") when
%% the server sends no dummy ChangeCipherSpec (RFC 8446 D.4).
%%
%%   erlc -o /tmp bench/tls-memory/otp_tls13.erl
%%   erl -noshell -pa /tmp -run otp_tls13 main 127.0.0.1 5222 localhost
%%
%% Prints "ok [protocol, cipher]" or "error REASON".
-module(otp_tls13).
-export([main/1]).

main([Host, Port, Domain]) ->
    ssl:start(),
    {ok, S} = gen_tcp:connect(Host, list_to_integer(Port), [binary, {active, false}], 5000),
    ok = gen_tcp:send(S, ["<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                          "xmlns:stream='http://etherx.jabber.org/streams' to='", Domain,
                          "' version='1.0'>"]),
    wait(S, <<"</stream:features>">>, <<>>),
    ok = gen_tcp:send(S, <<"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>">>),
    wait(S, <<"<proceed">>, <<>>),
    case ssl:connect(S, [{versions, ['tlsv1.3']}, {verify, verify_none}], 5000) of
        {ok, T} ->
            {ok, Info} = ssl:connection_information(T, [protocol, selected_cipher_suite]),
            io:format("ok ~p~n", [Info]);
        Error ->
            io:format("error ~p~n", [Error])
    end,
    halt().

wait(S, Needle, Acc) ->
    case binary:match(Acc, Needle) of
        nomatch ->
            {ok, Data} = gen_tcp:recv(S, 0, 5000),
            wait(S, Needle, <<Acc/binary, Data/binary>>);
        _ ->
            ok
    end.
