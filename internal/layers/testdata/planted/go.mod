module planted.test/pogo

go 1.26
